"""The audit trail's own parts: the event model (`event`), its PS3.15 A.5 audit message
(`message`) and the syslog sender that delivers messages to a collector (`syslog`).

Beside `auth` in the direction of DESIGN.md: services, web and dimse build events; the
index reaches the event model only through `services.ports`.
"""
