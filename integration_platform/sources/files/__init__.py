"""File drops on SFTP/FTP: FileSource, drop planning, formats, the SFTP and FTP resources."""
