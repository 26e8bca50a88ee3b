pub mod crm;
