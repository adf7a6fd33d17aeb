# Setup: this same cell opens every notebook (generated from helpers/course/templates/setup_cell.py).
# On Colab it installs the kit once (about 35 s, measured on a Colab-like stack); on your own machine it installs nothing.
import os, subprocess, sys
LAB = "{lab}"
REPO_URL = "{repo_url}"
if "google.colab" in sys.modules:
    KIT = os.path.join(os.environ.get("OTS_COLAB_ROOT", "/content"), "own-the-stack")
    if not os.path.isdir(KIT):
        print("[kit] step 1 of 2: fetching the kit (a few seconds)", flush=True)
        subprocess.run(["git", "clone", "-q", "--depth", "1", os.environ.get("OTS_REPO_URL", REPO_URL), KIT], check=True)
        print("[kit] step 2 of 2: installing what the labs import (about 35 s; each part is named as it goes)", flush=True)
        subprocess.run(["bash", f"{{KIT}}/scripts/colab_install.sh"], check=True)
    # a Colab runtime forgets its files when it ends: results kept in Google Drive carry from lab to lab
    DRIVE = os.path.join(os.environ.get("OTS_COLAB_ROOT", "/content"), "drive", "MyDrive")
    if "OTS_CACHE" not in os.environ and os.path.isdir(DRIVE):
        os.environ["OTS_CACHE"] = os.path.join(DRIVE, "own-the-stack")
        print(f"[kit] your results are kept in Google Drive ({{os.environ['OTS_CACHE']}}): later labs find them in any new runtime")
    elif "OTS_CACHE" not in os.environ:
        print("[kit] this runtime's files go when it ends, your results with them: to carry them from lab to lab, run "
              "`from google.colab import drive; drive.mount('/content/drive')` in a cell, then this cell again")
    sys.path.insert(0, KIT)
    os.chdir(f"{{KIT}}/labs/{{LAB}}")
import helpers, helpers.course
helpers.show_environment()
grader = helpers.course.make_grader()  # runs the exercise checks: grader.check("q1")
