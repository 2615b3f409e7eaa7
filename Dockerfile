# zonecached image: build in the Rust image, run in slim Debian.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p zonecache-server --bin zonecached --bin zonecache

FROM debian:bookworm-slim
COPY --from=build /src/target/release/zonecached /usr/local/bin/zonecached
# The operator tool: status, drain, and the Kubernetes probes (ready, leave).
COPY --from=build /src/target/release/zonecache /usr/local/bin/zonecache
EXPOSE 11211
# Inside its container a node listens on the container's interfaces.
ENTRYPOINT ["zonecached", "-l", "0.0.0.0", "-p", "11211"]
