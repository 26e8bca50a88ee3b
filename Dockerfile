# syntax=docker/dockerfile:1
# One build, two small images: `--target runtime` (dreampipe) and `--target operator`
# (dreampipe-operator). Dependencies are compiled in their own layer (cargo-chef), cached until
# a manifest or Cargo.lock changes.
# The toolchain: at least the workspace's rust-version (runtime/tests/image.rs checks it).
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.77
WORKDIR /src

# The dependency recipe: the workspace's manifests and lock file, with every crate and target
# reduced to a stub, so the next stage's dependency layer changes only when they do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json -p runtime -p operator
COPY . .
RUN cargo build --release --locked -p runtime --bin dreampipe -p operator --bin dreampipe-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/dreampipe /usr/local/bin/dreampipe
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/dreampipe"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /src/target/release/dreampipe-operator /usr/local/bin/dreampipe-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/dreampipe-operator"]
