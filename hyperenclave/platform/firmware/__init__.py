"""Platform firmware: measured boot of the host (S-CRTM, loader, kernel, initramfs, command line)."""
