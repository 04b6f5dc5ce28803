def main() -> None:
    raise SystemExit("crc: cli not built yet")
