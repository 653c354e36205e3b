"""Long-tailed WebDataset shards (docs/shards.md): sources of labelled images and the resumable writer."""

from .file_sources import file_source, image_list_source, imagefolder_source, inat_source
from .sources import ImageSource, builtin_sources
from .writer import OtherPlanError, ShardWriteError, write_shards

__all__ = [
    "ImageSource",
    "OtherPlanError",
    "ShardWriteError",
    "builtin_sources",
    "file_source",
    "image_list_source",
    "imagefolder_source",
    "inat_source",
    "write_shards",
]

# Readers: index.json, the uniform stream and the re-balanced stream (docs/rebalanced_stream.md).
from .index import CorruptShardError, IndexFormatError, ShardIndex, load_index, verify_shard  # noqa: E402
from .loader import ShardLoader  # noqa: E402
from .rebalanced import RebalancedStream  # noqa: E402
from .samples import BadSampleError  # noqa: E402
from .stream import ShardStream  # noqa: E402

__all__ += [
    "BadSampleError",
    "CorruptShardError",
    "IndexFormatError",
    "RebalancedStream",
    "ShardIndex",
    "ShardLoader",
    "ShardStream",
    "load_index",
    "verify_shard",
]
