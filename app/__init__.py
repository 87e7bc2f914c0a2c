"""Streamlit front end of CrystalFormer-RL Explorer: UI helpers only; all science lives in ``core``."""
