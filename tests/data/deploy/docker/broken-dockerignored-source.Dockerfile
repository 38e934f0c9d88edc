# BROKEN ON PURPOSE (scripts/test-validate-deploy.sh, step `dockerfile`): the COPY source exists in
# the repository but .dockerignore keeps it out of the build context, so the build fails.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY deploy/riskgate.yaml /etc/riskgate/config/riskgate.yaml
COPY tests/data/jwt/ /etc/riskgate/jwt/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/riskgate"]
