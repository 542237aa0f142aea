"""The appliance image's first boot: per-device settings from the card's FAT partition."""
