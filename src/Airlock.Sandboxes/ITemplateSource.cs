namespace Airlock.Sandboxes;

/// <summary>Where the lifecycle gets a template's root filesystem (airlockd: the template catalog and builder).</summary>
public interface ITemplateSource
{
    /// <summary>Whether the template exists; <paramref name="known"/> lists the ones that do, for the error message.</summary>
    bool IsKnown(string templateId, out IReadOnlyCollection<string> known);

    /// <summary>The template's root filesystem directory, built on first use.</summary>
    Task<string> GetRootFsAsync(string templateId, CancellationToken cancellationToken);
}
