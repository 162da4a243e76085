"""The descriptor pool our generated messages live in, apart from protobuf's default pool."""
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, empty_pb2, struct_pb2

POOL = descriptor_pool.DescriptorPool()
for _module in (any_pb2, empty_pb2, struct_pb2):
    _file = descriptor_pb2.FileDescriptorProto()
    _module.DESCRIPTOR.CopyToProto(_file)
    POOL.Add(_file)
