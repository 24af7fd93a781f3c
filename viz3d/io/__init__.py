"""Loading: files (NIfTI, DICOM, label tables) -> `Volume` (array + voxel->RAS mm affine) and `LabelTable`
(value -> name, colour). The first stage of the flow; imports nothing else of viz3d but `viz3d.errors`."""
