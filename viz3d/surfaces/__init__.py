"""Surfaces: pure functions of arrays and affines -> named triangle meshes in RAS mm (extraction,
smoothing, checks, repair, simplification). No rendering; reads `viz3d.io` types only."""
