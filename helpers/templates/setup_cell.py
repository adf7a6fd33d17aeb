# Setup: this same cell opens every notebook (generated from helpers/templates/setup_cell.py).
# On Colab it installs the kit once (about 2 min); on your own machine it installs nothing.
import os, subprocess, sys
LAB = "{lab}"
REPO_URL = "{repo_url}"
if "google.colab" in sys.modules:
    if not os.path.isdir("/content/own-the-stack"):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "/content/own-the-stack"], check=True)
        subprocess.run(["bash", "/content/own-the-stack/scripts/colab_install.sh"], check=True)
    sys.path.insert(0, "/content/own-the-stack")
    os.chdir(f"/content/own-the-stack/labs/{{LAB}}")
import helpers, helpers.course
helpers.show_environment()
grader = helpers.course.make_grader()  # runs the exercise checks: grader.check("q1")
