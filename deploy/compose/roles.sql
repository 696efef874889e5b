-- The two roles of the compose demo (docs/operations/database-roles.md): the owner
-- migrates, the application role only reads and writes rows. Run once by the
-- postgres image when it initialises its data. The passwords are for the demo only.
CREATE ROLE platform_owner LOGIN PASSWORD 'demo-owner-password';
CREATE ROLE platform_app LOGIN PASSWORD 'demo-app-password';
CREATE DATABASE platform OWNER platform_owner;
-- Only these two roles may connect: any role that can connect could also
-- NOTIFY the service's event channel.
REVOKE CONNECT ON DATABASE platform FROM PUBLIC;
GRANT CONNECT ON DATABASE platform TO platform_app;
\connect platform
GRANT USAGE ON SCHEMA public TO platform_app;
ALTER DEFAULT PRIVILEGES FOR ROLE platform_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO platform_app;
ALTER DEFAULT PRIVILEGES FOR ROLE platform_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO platform_app;
