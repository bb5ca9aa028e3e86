# One image holding both services and the event viewer; docker-compose.yml picks the binary
# per container.
# Queries are checked at run time, so the build needs no database.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p product-service -p order-service -p event-viewer \
 && mkdir -p /out \
 && cp target/release/product-service target/release/order-service target/release/event-viewer /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home app
COPY --from=build /out/ /usr/local/bin/
USER app
