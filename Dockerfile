# syntax=docker/dockerfile:1
# One build, two small images: `--target runtime` (dreampipe) and `--target operator`
# (dreampipe-operator). Dependencies are compiled in their own layer, cached until
# Cargo.toml or Cargo.lock change.
FROM rust:1.89-bookworm AS build
WORKDIR /src
# Dependency layer: the manifests with empty crate roots.
COPY Cargo.toml Cargo.lock ./
COPY crds/Cargo.toml crds/
COPY operator/Cargo.toml operator/
COPY process/Cargo.toml process/
COPY runtime/Cargo.toml runtime/
COPY testbed/Cargo.toml testbed/
RUN for crate in crds operator process runtime testbed; do \
      mkdir -p "$crate/src" "$crate/src/bin" "$crate/benches" \
      && echo 'fn main() {}' > "$crate/src/main.rs" \
      && touch "$crate/src/lib.rs"; \
    done \
    && echo 'fn main() {}' > crds/src/bin/crdgen.rs \
    && for bench in operator/benches/memory runtime/benches/receiver runtime/benches/query; do \
      echo 'fn main() {}' > "$bench.rs"; \
    done \
    && cargo build --release --locked -p runtime -p operator || true
COPY . .
RUN touch crds/src/lib.rs operator/src/main.rs process/src/lib.rs runtime/src/main.rs \
    && cargo build --release --locked -p runtime --bin dreampipe -p operator --bin dreampipe-operator

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
