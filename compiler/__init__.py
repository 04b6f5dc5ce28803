"""crc.compiler"""
