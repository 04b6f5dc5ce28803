from crc.cli import main

main()
