using System.Security.Cryptography;
using System.Text;

namespace Airlock.Server.Auth;

/// <summary>API key and token material. Keys are shown once and stored only as SHA-256.</summary>
public static class ApiKeys
{
    /// <summary>Keys use E2B's shape (<c>e2b_</c> + hex) so E2B SDKs accept them without turning off their format check.</summary>
    public const string Prefix = "e2b_";

    public static string NewApiKey() => Prefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(20));

    public static string NewId(int bytes = 8) => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(bytes));

    /// <summary>SHA-256, as for sandbox access tokens.</summary>
    public static string Hash(string secret) => Airlock.Sandboxes.AccessTokens.Hash(secret);

    /// <summary>Constant-time comparison of a presented secret with a stored hash.</summary>
    public static bool Matches(string? presented, string storedHash) => Airlock.Sandboxes.AccessTokens.Matches(presented, storedHash);
}
