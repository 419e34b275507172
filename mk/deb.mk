# Debian packages with Debian's own tooling (debian/): dpkg-buildpackage on
# a copy of the tree in build/deb/src, the .debs beside it, then lintian.
#
#   make deb    build/deb/libnginx-mod-http-dstack-mesh_*.deb, dstack-ctld_*.deb

DEB_DIR := $(BUILD)/deb

.PHONY: deb
deb: deps
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	tar -c --exclude=./build --exclude=./.git --exclude=./t/servroot . \
	    | tar -x -C $(DEB_DIR)/src
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc > $(DEB_DIR)/build.log 2>&1 \
	    || { tail -30 $(DEB_DIR)/build.log; exit 1; }
	lintian --fail-on error $(DEB_DIR)/*.deb
