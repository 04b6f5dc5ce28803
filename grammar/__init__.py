"""crc.grammar"""
