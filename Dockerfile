# repstream's image: `docker build -t repstream .`, or `docker compose up --build`
# for the demo (docker-compose.yml). The entry point is the binary, so a
# container's command is a subcommand and its flags: serve --config FILE.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/repstream ./cmd/repstream

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/repstream /usr/local/bin/repstream
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/repstream"]
CMD ["serve", "--config", "/etc/repstream/config.yaml"]
