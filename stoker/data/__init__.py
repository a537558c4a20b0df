"""Framework-free data plumbing: the loader policy, datasets over sources, splits, manifests, progress.

Laid out by what the data is: ``sources/`` holds the readers the media DataModules pick from
(class folders, tables, Hugging Face datasets, WebDataset tars, and ``sources/shards/`` for stoker shard
sets), ``text/`` the text tables, tokenization and streams, ``lm/`` language-model packing. Those are
imported where they are used; the names below are the common ones, resolved on first use.
"""

from stoker._lazy import lazy_namespace

# Public name -> its module, imported on first use (importing one light module never imports them all).
_EXPORTS: dict[str, str] = {
    "AudioFileDataset": "stoker.data.file_dataset",
    "FileDataset": "stoker.data.file_dataset",
    "ImageFileDataset": "stoker.data.file_dataset",
    "FolderIndex": "stoker.data.sources.folder_tree",
    "find_bad_files": "stoker.data.sources.folder_tree",
    "index_folder": "stoker.data.sources.folder_tree",
    "read_path_list": "stoker.data.sources.folder_tree",
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
    "WorkerSeeding": "stoker.seeds",
    "derive_seed": "stoker.seeds",
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
