# Setup: this same cell opens every notebook (generated from helpers/course/templates/setup_cell.py).
# On Colab it installs the kit once (about 2 min); on your own machine it installs nothing.
import os, subprocess, sys
LAB = "{lab}"
REPO_URL = "{repo_url}"
if "google.colab" in sys.modules:
    KIT = os.path.join(os.environ.get("OTS_COLAB_ROOT", "/content"), "own-the-stack")
    if not os.path.isdir(KIT):
        subprocess.run(["git", "clone", "--depth", "1", os.environ.get("OTS_REPO_URL", REPO_URL), KIT], check=True)
        subprocess.run(["bash", f"{{KIT}}/scripts/colab_install.sh"], check=True)
    sys.path.insert(0, KIT)
    os.chdir(f"{{KIT}}/labs/{{LAB}}")
import helpers, helpers.course
helpers.show_environment()
grader = helpers.course.make_grader()  # runs the exercise checks: grader.check("q1")
