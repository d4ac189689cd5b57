#!/usr/bin/env bash
# Builds the solution and publishes the Native AOT guest agent and the CLI into artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
config=${CONFIGURATION:-Release}
dotnet restore Airlock.slnx -v q
dotnet build Airlock.slnx -c "$config" --no-restore -v q -nologo -clp:ErrorsOnly
dotnet publish src/Airlock.Guest -c Release -r linux-x64 -o artifacts/guest -v q -nologo -clp:ErrorsOnly
dotnet publish src/Airlock.Cli -c "$config" -o artifacts/cli --no-restore -v q -nologo -clp:ErrorsOnly
