"""Codecs: one per wire protocol (v1, the two seed shapes, the Open Inference Protocol).

A codec turns a parsed request into the data plane's typed input and a typed result
into response bytes; it owns a wire shape and nothing else.
"""
