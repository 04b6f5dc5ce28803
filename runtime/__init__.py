"""crc.runtime"""
