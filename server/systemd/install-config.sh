#!/bin/sh
# meson install: puts the example settings in place as the settings file,
# unless one is already there (an upgrade must not overwrite an admin's
# settings). $1: the settings file's path (without DESTDIR).
set -eu
conf="${DESTDIR:-}$1"
if [ ! -e "$conf" ]; then
	install -m 0644 "$conf.example" "$conf"
	echo "installed $conf"
else
	echo "kept $conf (the new defaults are in $conf.example)"
fi
