# Every Debian package the build, the tests and the demo need.  Installing is
# skipped when all are present, so `make test` can call this cheaply.

DEB_PACKAGES := \
	build-essential clang llvm libclang-rt-14-dev pkg-config \
	nginx nginx-dev libnginx-mod-stream \
	libssl-dev openssl ca-certificates libsqlite3-dev sqlite3 libjansson-dev \
	libcurl4-openssl-dev curl libnl-3-dev libnl-genl-3-dev libnl-route-3-dev \
	libmicrohttpd-dev libnftables-dev nftables libldns-dev libhttp-parser-dev \
	bind9-dnsutils dnsmasq-base \
	wireguard-tools wireguard-go iproute2 iputils-ping procps psmisc shellcheck \
	qemu-system-x86 busybox-static cpio kmod \
	perl libtest-base-perl libio-socket-ssl-perl strace \
	podman runc debootstrap debhelper dpkg-dev fakeroot lintian

deps:
	@missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' \
	        $(DEB_PACKAGES) 2>/dev/null | awk '$$1 == "ii" { print $$2 }' \
	    | sort | comm -13 - <(tr ' ' '\n' <<< "$(DEB_PACKAGES)" | sort)); \
	if [ -n "$$missing" ]; then \
	    echo "installing:" $$missing; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q && \
	    apt-get install -y -q --no-install-recommends $$missing; \
	fi
