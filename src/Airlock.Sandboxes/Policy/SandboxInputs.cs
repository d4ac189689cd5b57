namespace Airlock.Sandboxes.Policy;

/// <summary>Checks of what a caller hands a sandbox verbatim: environment variables and metadata.</summary>
internal static class SandboxInputs
{
    public static Dictionary<string, string> Env(IReadOnlyDictionary<string, string> env)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in env)
        {
            // A name with '=', whitespace or a control character cannot be set as written (or would inject another).
            if (name.Length is 0 or > 256 || name.Any(c => c == '=' || char.IsWhiteSpace(c) || char.IsControl(c)) || name.StartsWith("AIRLOCK_", StringComparison.Ordinal))
            {
                throw SandboxException.Invalid("invalid_env", $"envVars name '{name}' is not allowed.");
            }

            if (value is null || value.Contains('\0', StringComparison.Ordinal) || value.Length > 32 * 1024)
            {
                throw SandboxException.Invalid("invalid_env", $"envVars value for '{name}' is not allowed (NUL byte or longer than 32 KiB).");
            }

            result[name] = value;
        }

        return result.Count > 128 ? throw SandboxException.Invalid("invalid_env", "at most 128 envVars.") : result;
    }

    public static Dictionary<string, string> Metadata(IReadOnlyDictionary<string, string> metadata)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in metadata)
        {
            if (key.Length is 0 or > 256 || value is null || value.Length > 4096)
            {
                throw SandboxException.Invalid("invalid_metadata", $"metadata key '{key}' or its value is invalid (key 1-256 chars, value at most 4096).");
            }

            result[key] = value;
        }

        return result.Count > 64 ? throw SandboxException.Invalid("invalid_metadata", "at most 64 metadata entries.") : result;
    }
}
