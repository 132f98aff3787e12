"""Arrow/Parquet encoding of LeRobot v3 tables: per-frame data, episodes metadata and tasks.

Per-frame columns use the Arrow types that Hugging Face ``datasets`` gives LeRobot's features
(shape [1] -> scalar, [n] -> fixed_size_list, [a, b, ...] -> nested lists, image -> struct<bytes,
path> holding a PNG), and the schema carries the ``huggingface`` features metadata so
``datasets.Dataset.from_parquet`` restores them. ``meta/tasks.parquet`` carries the ``pandas``
metadata that makes ``pd.read_parquet`` return the task strings as the index, as LeRobot expects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policies.datasets.atomic import atomic_path
from policies.datasets.layout import DatasetError, DatasetFileNotFoundError

_ARROW_SCALARS = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "int16": pa.int16(),
    "int8": pa.int8(),
    "uint8": pa.uint8(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def data_features(features: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The features stored in data parquet files (all but video features, in the given order)."""
    return {k: ft for k, ft in features.items() if ft["dtype"] != "video"}


def arrow_type(ft: Mapping[str, Any]) -> pa.DataType:
    """Arrow type of one frame of a feature, as ``datasets`` maps LeRobot features."""
    if ft["dtype"] == "image":
        return _IMAGE_TYPE
    scalar = _ARROW_SCALARS[ft["dtype"]]
    shape = list(ft["shape"])
    if shape == [1]:
        return scalar
    if len(shape) == 1:
        return pa.list_(scalar, shape[0])
    out = scalar
    for _ in shape:
        out = pa.list_(out)
    return out


def _hf_feature(ft: Mapping[str, Any]) -> dict[str, Any]:
    shape = list(ft["shape"])
    if ft["dtype"] == "image":
        return {"_type": "Image"}
    if shape == [1]:
        return {"dtype": ft["dtype"], "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": shape[0], "_type": "Sequence"}
    return {"shape": shape, "dtype": ft["dtype"], "_type": f"Array{len(shape)}D"}


def data_schema(features: Mapping[str, Mapping[str, Any]]) -> pa.Schema:
    """Arrow schema of a data parquet file, with the ``huggingface`` features metadata."""
    feats = data_features(features)
    hf = {"info": {"features": {k: _hf_feature(ft) for k, ft in feats.items()}}}
    fields = [pa.field(k, arrow_type(ft)) for k, ft in feats.items()]
    return pa.schema(fields, metadata={b"huggingface": json.dumps(hf).encode()})


def _encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def to_arrow(values: np.ndarray | Sequence[Any], ft: Mapping[str, Any]) -> pa.Array:
    """Arrow array of N frames of one feature; ``values`` is (N, *shape) (strings: N strings)."""
    typ = arrow_type(ft)
    if ft["dtype"] == "image":
        return pa.array([{"bytes": _encode_png(img), "path": None} for img in values], type=typ)
    if ft["dtype"] == "string":
        return pa.array([str(v) for v in values], type=typ)
    arr = np.asarray(values, dtype=np.dtype(ft["dtype"]))
    n = arr.shape[0]
    if list(ft["shape"]) == [1]:
        return pa.array(arr.reshape(n), type=typ)
    out: pa.Array = pa.array(arr.reshape(-1), type=_ARROW_SCALARS[ft["dtype"]])
    shape = list(ft["shape"])
    if len(shape) == 1:
        return pa.FixedSizeListArray.from_arrays(out, shape[0])
    for size, count in zip(reversed(shape), np.cumprod([n, *shape[:-1]])[::-1], strict=True):
        out = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * size), out)
    return out


def from_arrow(column: pa.ChunkedArray | pa.Array, ft: Mapping[str, Any], where: str) -> np.ndarray:
    """NumPy (N, *shape) array from an Arrow column of a feature (images: (N, H, W, 3) uint8).

    Raises:
        DatasetError: naming ``where``, if the values do not fit the feature's shape or cannot decode.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column.type, pa.ExtensionType):
        column = column.storage
    n, shape = len(column), list(ft["shape"])
    if ft["dtype"] == "image":
        return _decode_images(column, shape, where)
    if ft["dtype"] == "string":
        return np.asarray(column.to_pylist(), dtype=object)
    flat = column
    while pa.types.is_list(flat.type) or pa.types.is_fixed_size_list(flat.type) or pa.types.is_large_list(flat.type):
        flat = flat.flatten()
    values = flat.to_numpy(zero_copy_only=False)
    if values.size != n * int(np.prod(shape)):
        raise DatasetError(f"{where}: {values.size} values do not fill {n} frames of shape {shape}")
    out = values.astype(np.dtype(ft["dtype"]), copy=False)
    return out.reshape(n) if shape == [1] else out.reshape(n, *shape)


def _decode_images(column: pa.Array, shape: list[int], where: str) -> np.ndarray:
    out = np.empty((len(column), *shape), dtype=np.uint8)
    for i, item in enumerate(column.field("bytes").to_pylist()):
        image = cv2.imdecode(np.frombuffer(item or b"", np.uint8), cv2.IMREAD_COLOR) if item else None
        if image is None or list(image.shape) != shape:
            raise DatasetError(f"{where}: image of frame {i} is missing, undecodable or not of shape {shape}")
        out[i] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return out


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a parquet file, mapping failures to dataset errors that name the path.

    Raises:
        DatasetFileNotFoundError: if the file is missing.
        DatasetError: if it is truncated/corrupt or lacks one of ``columns``.
    """
    if not path.is_file():
        raise DatasetFileNotFoundError(f"parquet file not found: {path}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"cannot read parquet file {path}: {err}") from err
    missing = [c for c in columns or () if c not in table.column_names]
    if missing:
        raise DatasetError(f"parquet file {path} lacks column(s) {missing}")
    return table


def write_parquet(table: pa.Table, path: Path) -> Path:
    """Write ``table`` to ``path`` atomically (snappy, as LeRobot) and return the path."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="snappy")
    return path


_PANDAS_TASKS_METADATA = {
    "index_columns": ["task"],
    "column_indexes": [
        {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
         "metadata": {"encoding": "UTF-8"}}
    ],
    "columns": [
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
    ],
    "creator": {"library": "pyarrow", "version": pa.__version__},
    "pandas_version": "2.2.3",
}


def tasks_table(tasks: Sequence[str]) -> pa.Table:
    """meta/tasks.parquet content: ``task_index`` column and the ``task`` strings as pandas index."""
    schema = pa.schema(
        [pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
        metadata={b"pandas": json.dumps(_PANDAS_TASKS_METADATA).encode()},
    )
    return pa.table({"task_index": list(range(len(tasks))), "task": list(tasks)}, schema=schema)


def read_tasks(path: Path) -> dict[int, str]:
    """Read meta/tasks.parquet into {task_index: task}.

    Raises:
        DatasetFileNotFoundError / DatasetError: naming the path, if missing, corrupt or malformed.
    """
    table = read_parquet(path, ["task_index"])
    name = "task" if "task" in table.column_names else "__index_level_0__"
    if name not in table.column_names:
        raise DatasetError(f"tasks file {path} has no 'task' column or index")
    indices = table.column("task_index").to_pylist()
    strings = table.column(name).to_pylist()
    if any(not isinstance(t, str) for t in strings) or len(set(indices)) != len(indices):
        raise DatasetError(f"tasks file {path}: tasks must be strings with unique task_index")
    return dict(zip((int(i) for i in indices), strings, strict=True))


def episodes_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """meta/episodes parquet content from per-episode rows (stats arrays become nested lists)."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns = {
        key: [v.tolist() if isinstance(v, np.ndarray) else v for v in (row.get(key) for row in rows)]
        for key in keys
    }
    return pa.table(columns)
