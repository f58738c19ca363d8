"""Datasets for the training study: scikit-learn's digits, MNIST-1D, modular addition, or arrays
a user has in an ``.npz``.

The loaders return a :class:`Dataset` of float32 features (or int32 tokens) in rows and int32
labels ``0 .. K-1``, checked once here so that training code never sees a malformed array.

* :func:`load_digits`: the 1797 8x8 handwritten digits that ship inside scikit-learn (UCI
  optical recognition of handwritten digits; no download), pixels scaled from 0..16 to [0, 1],
  split into train and test sets by a fixed stratified split.
* :func:`load_mnist1d`: MNIST-1D (Greydanus 2020), 5000 one-dimensional signals of 40 points
  generated procedurally from ten templates by the ``mnist1d`` package (no download: its
  ``make_dataset``, never its ``get_dataset``). A harder task: an MLP reaches about 68% test
  accuracy there (Greydanus's baseline), against 97% on the digits.
* :func:`load_modadd`: modular addition ``(a + b) mod p`` as two-token sequences, generated
  in NumPy, for a small Transformer.
* :func:`load_npz`: a user's own arrays, e.g. MNIST, under the keys ``x_train``, ``y_train``,
  ``x_test`` and ``y_test``.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import numpy as np

from jdrop._src import errors

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES = 2**16  # the output layer has one unit per class


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A classification dataset, ready to train on.

  Attributes:
    x_train: float32 features of shape ``(n_train, d)``.
    y_train: int32 labels of shape ``(n_train,)``, in ``0 .. num_classes - 1``.
    x_test: float32 features of shape ``(n_test, d)``.
    y_test: int32 labels of shape ``(n_test,)``, in ``0 .. num_classes - 1``.
    num_classes: ``K``, one more than the largest label in either split.
    name: where the data came from (``"digits"`` or the file's name), for reports.
    vocab: for token data (int32 ``x`` of shape ``(n, length)``), the number of distinct
      tokens; 0 for float features.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str
  vocab: int = 0

  def describe(self) -> dict[str, Any]:
    """The sizes of the dataset, JSON-serialisable, for a results file."""
    return {
      "name": self.name,
      "train": int(self.x_train.shape[0]),
      "test": int(self.x_test.shape[0]),
      "features": int(self.x_train.shape[1]),
      "classes": self.num_classes,
    } | ({"vocab": self.vocab} if self.vocab else {})


def digit_pixels() -> np.ndarray:
  """The 1797 8x8 handwritten digits of scikit-learn (UCI), as float32 of shape (1797, 64).

  Raw pixel values 0..16 (``jdrop.montecarlo.load_digits``: real data for
  ``dense_preactivations``); needs the optional dependency ``scikit-learn`` (the data ship
  with it, no download).

  Raises:
    ImportError: if scikit-learn is not installed, saying how to install it.
  """
  return np.asarray(_sklearn("jdrop.montecarlo.load_digits").load_digits().data, np.float32)


def _sklearn(fn: str) -> Any:
  """scikit-learn's ``datasets``, or an ImportError that says how to install it."""
  try:
    from sklearn import datasets  # an optional dependency: only the digits need it
  except ImportError as err:
    raise ImportError(
      f"{fn}: needs scikit-learn, which is not installed. Install it with"
      " `pip install scikit-learn`, or pass your own arrays."
    ) from err
  return datasets


def load_digits(*, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
  """scikit-learn's 8x8 digits, pixels scaled to [0, 1], in a fixed stratified split.

  The 1797 images (10 classes, about 180 each) ship inside scikit-learn, so nothing is
  downloaded. Pixel values 0..16 are divided by 16; each class is split in the same
  proportion (``sklearn.model_selection.train_test_split(stratify=y)``), so every seed of a
  study sees the same train and test sets and only the model's randomness varies.

  Args:
    seed: the split's random state.
    test_fraction: the fraction of the images held out for testing, in (0, 1).

  Returns:
    A :class:`Dataset` with 64 features and 10 classes.

  Raises:
    ImportError: if scikit-learn is not installed.

  Example:
    >>> data = load_digits()
    >>> data.x_train.shape, data.x_test.shape, data.num_classes
    ((1347, 64), (450, 64), 10)
  """
  fn = "jdrop.studies.load_digits"
  if not 0.0 < test_fraction < 1.0:
    raise errors.value_error(
      fn, "test_fraction", "must lie in (0, 1)", test_fraction, "Use e.g. test_fraction=0.25."
    )
  digits = _sklearn(fn).load_digits()
  from sklearn import model_selection

  x = np.asarray(digits.data, np.float32) / np.float32(16.0)
  y = np.asarray(digits.target, np.int32)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
    x, y, test_size=test_fraction, stratify=y, random_state=seed
  )
  return Dataset(x_train, y_train, x_test, y_test, num_classes=10, name="digits")


def load_mnist1d(*, seed: int = 42) -> Dataset:
  """MNIST-1D, generated in this process by ``mnist1d.data.make_dataset`` (no download).

  The package's default arguments (``get_dataset_args``: 5000 examples, 4000 for training,
  signals of 40 points, templates padded, scaled, translated, sheared and noised) with the
  generator's ``seed`` (42 is the published dataset's). ``make_dataset`` seeds the global
  random states of NumPy and of :mod:`random`; both are restored afterwards, so loading the
  data changes no other randomness.

  Raises:
    ImportError: if ``mnist1d`` is not installed, saying how to install it.

  Example:
    >>> data = load_mnist1d()
    >>> data.x_train.shape, data.x_test.shape, data.num_classes
    ((4000, 40), (1000, 40), 10)
  """
  fn = "jdrop.studies.load_mnist1d"
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise errors.value_error(fn, "seed", "must be a non-negative int", seed, "Use e.g. seed=42.")
  try:
    from mnist1d import data as mnist1d  # type: ignore[import-untyped]  # optional: the report extra
  except ImportError as err:
    raise ImportError(
      f"{fn}: needs the mnist1d package, which is not installed. Install it with"
      ' `pip install "jdrop[report]"` (or `pip install mnist1d`).'
    ) from err
  args = mnist1d.get_dataset_args()
  args.seed = seed
  # make_dataset seeds and draws from the global generators of NumPy and of `random`: the
  # legacy global state is what it uses, so it is saved and restored around it.
  state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
  try:
    made = mnist1d.make_dataset(args)
  finally:
    np.random.set_state(state)  # noqa: NPY002
    random.setstate(py_state)
  return Dataset(
    np.asarray(made["x"], np.float32),
    np.asarray(made["y"], np.int32),
    np.asarray(made["x_test"], np.float32),
    np.asarray(made["y_test"], np.int32),
    num_classes=10,
    name="MNIST-1D",
  )


def load_modadd(*, modulus: int = 31, train_fraction: float = 0.6, seed: int = 0) -> Dataset:
  r"""Modular addition as a sequence task: the tokens ``(a, b)``, the label ``(a + b) mod p``.

  Every pair of ``0 .. p-1`` appears once (:math:`p^2` examples, ``p`` classes); a fixed
  permutation by ``seed`` puts ``train_fraction`` of them in the training set and the rest in
  the test set, so the test pairs are never seen and only a model that learns the group's
  structure (not a lookup table) gets them right. The small-transformer benchmark of Power et
  al. (2022), "Grokking", where the MLP computes the answer from Fourier features of the two
  tokens (Nanda et al. 2023). Generated in NumPy, no download.

  Args:
    modulus: ``p``, at least 2; the vocabulary and the number of classes.
    train_fraction: the fraction of the pairs trained on, in (0, 1).
    seed: the split's seed, a non-negative int.

  Returns:
    A :class:`Dataset` whose ``x`` are int32 tokens of shape ``(n, 2)`` and ``vocab = p``.

  Example:
    >>> data = load_modadd(modulus=5)
    >>> data.x_train.shape, data.x_test.shape, data.num_classes, data.vocab
    ((15, 2), (10, 2), 5, 5)
    >>> bool(((data.x_train.sum(1) % 5) == data.y_train).all())
    True
  """
  fn = "jdrop.studies.load_modadd"
  if isinstance(modulus, bool) or not isinstance(modulus, int) or not 2 <= modulus <= 4096:
    raise errors.value_error(
      fn, "modulus", "must be an int in [2, 4096]", modulus, "Use e.g. modulus=31."
    )
  if not 0.0 < train_fraction < 1.0:
    raise errors.value_error(
      fn, "train_fraction", "must lie in (0, 1)", train_fraction, "Use e.g. train_fraction=0.6."
    )
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise errors.value_error(fn, "seed", "must be a non-negative int", seed, "Use e.g. seed=0.")
  a, b = np.divmod(np.arange(modulus * modulus, dtype=np.int32), np.int32(modulus))
  x, y = np.stack([a, b], axis=1), (a + b) % np.int32(modulus)
  order = np.random.default_rng(seed).permutation(len(x))
  n = min(max(1, round(train_fraction * len(x))), len(x) - 1)
  train, test = order[:n], order[n:]
  return Dataset(
    x[train],
    y[train],
    x[test],
    y[test],
    num_classes=modulus,
    name="modular addition",
    vocab=modulus,
  )


def load_npz(path: str | os.PathLike[str]) -> Dataset:
  """Arrays from an ``.npz`` file with the keys ``x_train``, ``y_train``, ``x_test``, ``y_test``.

  Write one with ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``.

  * ``x_train`` and ``x_test``: real numbers, either rows ``(n, d)`` or images ``(n, h, w)``
    or ``(n, h, w, c)``, which are flattened to rows; both must have the same number of
    features and no NaN or infinity. They are used as they are (cast to float32): scale them
    first (e.g. MNIST's 0..255 pixels divided by 255).
  * ``y_train`` and ``y_test``: integer class labels ``0 .. K-1`` of shape ``(n,)``, one per
    row of the matching ``x``. ``K`` is one more than the largest label.

  The file is read with ``allow_pickle=False``: an ``.npz`` never runs code when loaded.

  Args:
    path: the file to read.

  Returns:
    A :class:`Dataset` named after the file.

  Raises:
    ValueError: if the file cannot be read or an array is missing, mis-shaped, mislabelled or
      not finite; the message names the file and the array, and says how to fix it.

  Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> rng = np.random.default_rng(0)
    >>> np.savez(path, x_train=rng.random((6, 2, 2)), y_train=[0, 1, 2, 0, 1, 2],
    ...          x_test=rng.random((3, 2, 2)), y_test=[2, 1, 0])
    >>> data = load_npz(path)
    >>> data.x_train.shape, data.num_classes, data.name
    ((6, 4), 3, 'toy.npz')
  """
  fn = "jdrop.studies.load_npz"
  name = os.path.basename(os.fspath(path))
  fix_keys = "Save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
  try:
    loaded = np.load(path, allow_pickle=False)
  except Exception as err:  # any failure to open or parse the file: say so in one line
    raise _unreadable(fn, path, err) from err
  if not isinstance(loaded, np.lib.npyio.NpzFile):
    raise errors.value_error(
      fn,
      "path",
      "must be an .npz archive of named arrays",
      errors.Described(f"{name}, a single .npy array"),
      fix_keys,
    )
  with loaded as archive:
    missing = [key for key in NPZ_KEYS if key not in archive.files]
    if missing:
      raise errors.value_error(
        fn,
        "path",
        f"must hold the arrays {', '.join(NPZ_KEYS)}; missing {', '.join(missing)}",
        errors.Described(f"{name} with {', '.join(archive.files) or 'no arrays'}"),
        fix_keys,
      )
    try:
      arrays = {key: archive[key] for key in NPZ_KEYS}
    except Exception as err:  # a corrupt member, or an object array (never unpickled)
      raise _unreadable(fn, path, err) from err
  x_train = _features(fn, name, "x_train", arrays["x_train"])
  x_test = _features(fn, name, "x_test", arrays["x_test"])
  if x_train.shape[1] != x_test.shape[1]:
    raise errors.value_error(
      fn,
      "x_test",
      f"must have as many features per example as x_train ({x_train.shape[1]}) in {name}",
      errors.Described(f"{x_test.shape[1]} features"),
      "Save both splits with the same image size.",
    )
  y_train = _labels(fn, name, "y_train", arrays["y_train"], len(x_train))
  y_test = _labels(fn, name, "y_test", arrays["y_test"], len(x_test))
  num_classes = int(max(y_train.max(), y_test.max())) + 1
  if num_classes < 2:
    raise errors.value_error(
      fn,
      "y_train",
      f"must hold at least two classes in {name}",
      errors.Described("only label 0"),
      "Label the classes 0 .. K-1 with K >= 2.",
    )
  return Dataset(x_train, y_train, x_test, y_test, num_classes=num_classes, name=name)


def _unreadable(fn: str, path: Any, err: Exception) -> ValueError:
  reason = str(err).splitlines()[0] if str(err) else type(err).__name__
  return errors.value_error(
    fn,
    "path",
    f"must be a readable .npz file ({reason})",
    os.fspath(path),
    "Check the path, or write the file with np.savez(path, x_train=..., y_train=..., ...).",
  )


def _features(fn: str, name: str, key: str, x: np.ndarray) -> np.ndarray:
  """``x`` as float32 rows ``(n, d)``: images are flattened; NaN and infinity are refused."""
  if x.dtype.kind not in "biuf":
    raise errors.value_error(
      fn,
      key,
      f"must hold real numbers in {name}",
      errors.Described(f"dtype {x.dtype}"),
      f"Save {key} as a float or integer array.",
    )
  if x.ndim not in (2, 3, 4) or x.shape[0] == 0 or 0 in x.shape:
    raise errors.value_error(
      fn,
      key,
      f"must be a non-empty array of shape (n, d), (n, h, w) or (n, h, w, c) in {name}",
      errors.Described(f"shape {x.shape}"),
      "Put one example per row along the first axis.",
    )
  x = x.reshape(len(x), -1).astype(np.float32)
  finite = np.isfinite(x)
  if not finite.all():
    row = int(np.argwhere(~finite)[0, 0])
    raise errors.value_error(
      fn,
      key,
      f"must be finite in {name}",
      errors.Described(f"NaN or infinity in example {row} ({int((~finite).sum())} values)"),
      "Remove or impute the missing values before saving.",
    )
  return x


def _labels(fn: str, name: str, key: str, y: np.ndarray, rows: int) -> np.ndarray:
  """``y`` as int32 labels ``(n,)`` with ``n == rows``, integers >= 0."""
  if y.ndim != 1:
    raise errors.value_error(
      fn,
      key,
      f"must be a vector of labels of shape (n,) in {name}",
      errors.Described(f"shape {y.shape}"),
      "Save class indices, not one-hot rows: y.argmax(axis=1).",
    )
  if len(y) != rows:
    x_key = "x" + key[1:]
    raise errors.value_error(
      fn,
      key,
      f"must have one label per row of {x_key} ({rows}) in {name}",
      errors.Described(f"{len(y)} labels"),
      f"Save {key} and {x_key} with the same first dimension.",
    )
  if y.dtype.kind == "f":
    whole = np.isfinite(y) & (y == np.round(y))
    if not whole.all():
      bad = y[~whole][0]
      raise errors.value_error(
        fn,
        key,
        f"must hold integer class labels in {name}",
        errors.Described(f"the value {bad.item()!r}"),
        "Save the class indices 0 .. K-1 as integers.",
      )
  elif y.dtype.kind not in "biu":
    raise errors.value_error(
      fn,
      key,
      f"must hold integer class labels in {name}",
      errors.Described(f"dtype {y.dtype}"),
      "Save the class indices 0 .. K-1 as integers.",
    )
  if (y < 0).any():
    raise errors.value_error(
      fn,
      key,
      f"must hold labels 0 .. K-1 in {name}",
      errors.Described(f"the negative label {y[y < 0][0].item()!r}"),
      "Number the classes from 0.",
    )
  if y.max() >= MAX_CLASSES:
    raise errors.value_error(
      fn,
      key,
      f"must hold labels 0 .. K-1 with K <= {MAX_CLASSES} in {name}",
      errors.Described(f"the label {y.max().item()!r}"),
      "Number the classes 0 .. K-1 without gaps.",
    )
  return y.astype(np.int32)
