"""The converter's input error (a bad HF directory or checkpoint): one message naming the file and tensor."""


class ConversionError(RuntimeError):
    pass
