"""One small adapter per outside MLIP family (matgl, chgnet, sevenn, orb-models); see ``core.scoring.mlip``."""
