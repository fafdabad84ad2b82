"""The prediction audit log, ground-truth feedback, live quality, retention and usage.

Everything here observes the data plane's :class:`~mlgate.dataplane.InferenceEvent` or
reads what was recorded; nothing adds work to a request beyond appending to a queue.
The composition root builds :class:`mlgate.audit.service.AuditService`; settings are
:class:`mlgate.audit.settings.AuditSettings` (imported by the settings root, so this
package imports nothing at its top).
"""
