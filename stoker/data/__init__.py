"""Framework-free data plumbing: seeds, the loader policy, folder indexes and file datasets, splits, manifests.

``stoker.data.hf`` (Hugging Face loading, tokenizing, collating) and ``stoker.data.streams`` are
imported where they are used; they are not re-exported here.
"""

from stoker._lazy import lazy_namespace

# Public name -> its module, imported on first use (importing one light module never imports them all).
_EXPORTS: dict[str, str] = {
    "AudioFileDataset": "stoker.data.file_dataset",
    "FileDataset": "stoker.data.file_dataset",
    "ImageFileDataset": "stoker.data.file_dataset",
    "FolderIndex": "stoker.data.folder",
    "find_bad_files": "stoker.data.folder",
    "index_folder": "stoker.data.folder",
    "read_path_list": "stoker.data.folder",
    "available_cores": "stoker.data.loader",
    "build_loader": "stoker.data.loader",
    "default_num_workers": "stoker.data.loader",
    "Manifest": "stoker.data.manifest",
    "build_manifest": "stoker.data.manifest",
    "read_manifest": "stoker.data.manifest",
    "write_manifest": "stoker.data.manifest",
    "AUDIO": "stoker.data.media",
    "IMAGE": "stoker.data.media",
    "Media": "stoker.data.media",
    "WorkerSeeding": "stoker.data.seeds",
    "derive_seed": "stoker.data.seeds",
    "SPLITS": "stoker.data.splits",
    "split_folder_files": "stoker.data.splits",
    "stratified_split": "stoker.data.splits",
}
__getattr__, __dir__ = lazy_namespace(__name__, _EXPORTS)

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
