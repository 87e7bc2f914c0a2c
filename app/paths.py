"""Files of the front end."""
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
REPO_ROOT = APP_DIR.parent
STATIC_3DMOL = APP_DIR / "static" / "3Dmol-min.js"   # fetched by `make setup` from npm (3dmol)
PAGES_DIR = REPO_ROOT / "pages"
