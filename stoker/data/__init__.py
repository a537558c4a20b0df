"""Framework-free data plumbing: seeds, the loader policy, folder indexes and file datasets, splits, manifests.

``stoker.data.hf`` (Hugging Face loading, tokenizing, collating) and ``stoker.data.streams`` are
imported where they are used; they are not re-exported here.
"""

from stoker.data.file_dataset import AudioFileDataset, FileDataset, ImageFileDataset
from stoker.data.folder import FolderIndex, find_bad_files, index_folder, read_path_list
from stoker.data.loader import available_cores, build_loader, default_num_workers
from stoker.data.manifest import Manifest, build_manifest, read_manifest, write_manifest
from stoker.data.media import AUDIO, IMAGE, Media
from stoker.data.seeds import WorkerSeeding, derive_seed
from stoker.data.splits import SPLITS, split_folder_files, stratified_split

__all__ = [
    "AUDIO",
    "IMAGE",
    "SPLITS",
    "AudioFileDataset",
    "FileDataset",
    "FolderIndex",
    "ImageFileDataset",
    "Manifest",
    "Media",
    "WorkerSeeding",
    "available_cores",
    "build_loader",
    "build_manifest",
    "default_num_workers",
    "derive_seed",
    "find_bad_files",
    "index_folder",
    "read_manifest",
    "read_path_list",
    "split_folder_files",
    "stratified_split",
    "write_manifest",
]
