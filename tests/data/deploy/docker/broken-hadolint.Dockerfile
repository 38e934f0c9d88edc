# BROKEN ON PURPOSE (scripts/test-validate-deploy.sh, step `dockerfile`): COPY sources all exist,
# but the image floats on `latest`, installs unpinned packages without cleaning the apt lists and
# runs as root — hadolint must flag it (DL3007, DL3008, DL3009, DL3015, DL3002).
FROM debian:latest
RUN apt-get update && apt-get install curl
COPY deploy/riskgate.yaml /etc/riskgate/config/riskgate.yaml
USER root
ENTRYPOINT ["/usr/local/bin/riskgate"]
