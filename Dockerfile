# Both services in one image; pick one with the container command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wire-guard -p registry-proxy

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 guard
COPY --from=build /src/target/release/wire-guard /src/target/release/registry-proxy /usr/local/bin/
COPY policies /etc/kafka-guard/policies
USER guard
ENTRYPOINT []
