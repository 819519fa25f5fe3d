"""ISO images: the cloud-init seed (seed), the unattended installer from Debian's netboot files
(netboot, installer), remastering an official Debian ISO (remaster), and following the installer's
remote syslog (installer_log). Building blocks: isowriter (deterministic pycdlib), cpio, fat, gpt,
bootmenu."""
