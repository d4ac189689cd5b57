using System.Security.Cryptography;
using System.Text;

namespace Airlock.Envd;

/// <summary>
/// Signed <c>/files</c> URLs as E2B's SDKs make them for <c>uploadUrl</c>/<c>downloadUrl</c>:
/// <c>"v1_" + base64(sha256("{path}:{operation}:{username}:{token}[:{expiration}]"))</c> without '=' padding, where
/// operation is <c>read</c> (GET) or <c>write</c> (POST). The guest agent verifies them; airlockd uses the same function
/// to route a signed URL that names no sandbox (the SDK with <c>E2B_SANDBOX_URL</c> set).
/// </summary>
public static class EnvdSignatures
{
    public static string Sign(ReadOnlySpan<byte> token, string path, string operation, string user, long? expiration)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(operation);
        ArgumentNullException.ThrowIfNull(user);
        var prefix = Encoding.UTF8.GetBytes($"{path}:{operation}:{user}:");
        var suffix = expiration is { } e ? Encoding.UTF8.GetBytes(":" + e.ToString(System.Globalization.CultureInfo.InvariantCulture)) : [];
        var raw = new byte[prefix.Length + token.Length + suffix.Length];
        prefix.CopyTo(raw, 0);
        token.CopyTo(raw.AsSpan(prefix.Length));
        suffix.CopyTo(raw, prefix.Length + token.Length);
        try
        {
            return "v1_" + Convert.ToBase64String(SHA256.HashData(raw)).TrimEnd('=');
        }
        finally
        {
            CryptographicOperations.ZeroMemory(raw);
        }
    }

    /// <summary>Whether <paramref name="signature"/> is the one <paramref name="token"/> makes (constant time).</summary>
    public static bool Matches(string token, string signature, string path, string operation, string user, long? expiration)
    {
        ArgumentNullException.ThrowIfNull(token);
        ArgumentNullException.ThrowIfNull(signature);
        var expected = Sign(Encoding.UTF8.GetBytes(token), path, operation, user, expiration);
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(expected), Encoding.UTF8.GetBytes(signature));
    }
}
