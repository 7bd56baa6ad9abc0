# syntax=docker/dockerfile:1

# Build: a pinned Go toolchain; the module cache layer is reused until go.sum
# changes. CGO_ENABLED=0 gives a static binary that needs no libc.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o bin/pgsse .

# Run: distroless static, non-root, nothing but the binary (no shell: the
# health check is the binary's own subcommand).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/pgsse /pgsse
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s CMD ["/pgsse", "healthcheck"]
ENTRYPOINT ["/pgsse"]
CMD ["serve"]
