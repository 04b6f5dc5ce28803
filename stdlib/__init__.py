"""crc.stdlib"""
