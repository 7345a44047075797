"""Starts moto's HTTP server (moto.server.main) with two fixes for known gaps that would
otherwise make tests of a correct client fail:

1. Serial requests. moto serves requests on threads without isolation; a cancelled
   DynamoDB TransactWriteItems restores a snapshot of the whole table taken when it began,
   wiping writes that other threads made meanwhile. Real DynamoDB serialises conditional
   writes per item; serving one request at a time is a faithful (stricter) model.
2. AWSCURRENT moved by UpdateSecretVersionStage. moto moves the label but not its
   internal "default version", so a later PutSecretValue leaves AWSCURRENT on two versions
   and GetSecretValue(VersionStage=AWSCURRENT) returns the older one. Real Secrets Manager
   keeps the label on exactly one version.
"""
import sys

import werkzeug.serving

_run_simple = werkzeug.serving.run_simple


def _serial_run_simple(*args, **kwargs):
    kwargs["threaded"] = False
    return _run_simple(*args, **kwargs)


werkzeug.serving.run_simple = _serial_run_simple

import moto.server  # noqa: E402  (after the patch: it imports run_simple by name)
from moto.secretsmanager import models as sm_models  # noqa: E402

moto.server.run_simple = _serial_run_simple

_update_stage = sm_models.SecretsManagerBackend.update_secret_version_stage


def _update_secret_version_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id):
    result = _update_stage(self, secret_id, version_stage, remove_from_version_id, move_to_version_id)
    if version_stage == "AWSCURRENT" and move_to_version_id:
        secret = self.secrets[secret_id]
        secret.default_version_id = move_to_version_id
    return result


sm_models.SecretsManagerBackend.update_secret_version_stage = _update_secret_version_stage

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])
