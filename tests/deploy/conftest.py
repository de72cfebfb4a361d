"""The full compose stack test is collected only by `./dev deploy-test` (BACKUP_PIPELINES_DEPLOY_TEST=1):
it takes minutes, and the narrow test_docker_launcher.py covers the image and the run launcher in CI."""

import os

collect_ignore = [] if os.environ.get("BACKUP_PIPELINES_DEPLOY_TEST") == "1" else ["test_compose.py"]
