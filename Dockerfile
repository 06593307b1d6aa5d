# syntax=docker/dockerfile:1

# One image for every role: the service's command picks the subcommand
# (serve|ingest|count|rate|migrate|close|import|loadgen|demo|audit|keys|mau|version|...).
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t maumeter:dev .
#   docker run --rm maumeter:dev version

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so a source change does not download modules again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
# CGO off: the binary runs on distroless/static with no libc. timetzdata embeds
# the zone database, because billing months are taken in each tenant's zone.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -tags timetzdata \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/maumeter ./cmd/maumeter

# No shell and no wget here: compose healthchecks run `/maumeter healthcheck`.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/maumeter /maumeter
USER nonroot:nonroot
# 8080, 9464, 9465: the public listeners of ingest, count and rate; 9466: the admin listener
# (/metrics, pprof) when MAUMETER_ADMIN_ADDR sets it, as docker-compose.yml does.
EXPOSE 8080 9464 9465 9466
ENTRYPOINT ["/maumeter"]
CMD ["serve"]
