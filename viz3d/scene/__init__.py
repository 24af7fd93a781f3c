"""The PyVista scene: meshes, the three CT slices with window/level, legend, cameras. Built from
`viz3d.io` volumes and `viz3d.surfaces` meshes; every output starts from it."""
