# BROKEN ON PURPOSE (scripts/test-validate-deploy.sh, step `dockerfile`): lint-clean, but a COPY
# source does not exist in the build context (`config/` instead of `deploy/`), so the build fails.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY config/riskgate.yaml /etc/riskgate/config/riskgate.yaml
COPY policies/ /etc/riskgate/policies/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/riskgate"]
