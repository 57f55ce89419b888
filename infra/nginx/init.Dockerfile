# nginx-init: openssl baked in at build time (nothing is installed when the stack starts).
FROM alpine:3.24.1
RUN apk add --no-cache openssl
USER 0
ENTRYPOINT ["/bin/sh", "/infra/scripts/gen-certs.sh", "/certs"]
