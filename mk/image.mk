# The container image with podman, without a registry: a Debian 12 base made
# by debootstrap from the archive (cached in build/image), imported as
# $(IMAGE_BASE), then docker/Dockerfile built on it (BASE=...; elsewhere the
# default debian:12).  podman's storage lives under build/image and its
# settings in docker/containers.conf, so nothing global changes.
#
#   make image        the image $(IMAGE)
#   make test-image   the image run as a VPC server and two nodes, and the
#                     Debian packages installed into the same base

IMAGE_DIR      := $(BUILD)/image
IMAGE_ROOTFS   := $(IMAGE_DIR)/rootfs
IMAGE_BASE     := localhost/dstack-vpc-base:12
IMAGE          := localhost/dstack-vpc:latest
DEBIAN_MIRROR  ?= http://deb.debian.org/debian
PODMAN         := podman --root $(IMAGE_DIR)/storage --runroot $(IMAGE_DIR)/run \
                  --storage-driver vfs
export CONTAINERS_CONF := $(ROOT)/docker/containers.conf

.PHONY: image image-base test-image

# debootstrap once; the tarball is the cache, imported again only when the
# storage lost it
$(IMAGE_DIR)/debian-12.tar:
	rm -rf $(IMAGE_ROOTFS) && mkdir -p $(IMAGE_DIR)
	debootstrap --variant=minbase bookworm $(IMAGE_ROOTFS) $(DEBIAN_MIRROR) \
	    > $(IMAGE_DIR)/debootstrap.log || { tail -20 $(IMAGE_DIR)/debootstrap.log; exit 1; }
	rm -f $(IMAGE_ROOTFS)/etc/apt/sources.list
	printf '%s\n' 'Types: deb' 'URIs: $(DEBIAN_MIRROR)' \
	    'Suites: bookworm bookworm-updates' 'Components: main' \
	    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' '' \
	    'Types: deb' 'URIs: http://deb.debian.org/debian-security' \
	    'Suites: bookworm-security' 'Components: main' \
	    'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
	    > $(IMAGE_ROOTFS)/etc/apt/sources.list.d/debian.sources
	rm -rf $(IMAGE_ROOTFS)/var/cache/apt/*.bin $(IMAGE_ROOTFS)/var/lib/apt/lists/*
	tar -C $(IMAGE_ROOTFS) --numeric-owner -cf $@.tmp .
	rm -rf $(IMAGE_ROOTFS)
	mv $@.tmp $@

image-base: $(IMAGE_DIR)/debian-12.tar
	$(PODMAN) image exists $(IMAGE_BASE) || \
	    $(PODMAN) import --change 'CMD ["/bin/bash"]' $< $(IMAGE_BASE)

image: deps image-base
	$(PODMAN) build --network host --build-arg BASE=$(IMAGE_BASE) \
	    -f docker/Dockerfile -t $(IMAGE) .

# the simulator plays each CVM's guest agent
test-image: deps
	$(MAKE) agent-sim image deb
	PODMAN="$(PODMAN)" IMAGE=$(IMAGE) IMAGE_BASE=$(IMAGE_BASE) DSTACK_BIN=$(BIN) \
	    tests/run tests/image/*.t
