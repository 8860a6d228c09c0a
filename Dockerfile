FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin seatledger

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/seatledger seatledger && mkdir -p /var/lib/seatledger \
    && chown seatledger /var/lib/seatledger
COPY --from=build /src/target/release/seatledger /usr/local/bin/seatledger
USER seatledger
WORKDIR /var/lib/seatledger
EXPOSE 8080
ENTRYPOINT ["seatledger", "serve"]
